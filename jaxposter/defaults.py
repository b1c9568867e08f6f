"""Every knob of jaxposter, with its default: the config a run starts from.

The configs in configs/ import this module and override what they change; a saved workdir's
config.json is read against it (jaxposter/saved_config.py), so fields added since the run
keep their defaults. It lives in the package, so an installed jaxposter needs no configs/.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- data ---------------------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic_posters"  # or "movie_posters" (the Kaggle MovieGenre layout)
  d.data_dir = ""  # where TFDS writes prepared data; "" = TFDS default (~/tensorflow_datasets)
  d.image_height = 268  # network input size; the Kaggle posters are 268x182 (HxW)
  d.image_width = 182
  d.normalization = "unit"  # "unit": [0, 1]; "imagenet": ImageNet mean/std (pretrained models)
  d.random_flip = True  # training augmentation: random horizontal flip
  d.crop_fraction = 1.0  # < 1: resize to size/fraction, then random (train) / centre (eval) crop
  d.crop_min_area = 1.0  # < 1: random resized crops (train): a box of this to 100% of the area,
  d.crop_max_aspect = 4 / 3  # ... its aspect ratio up to this factor off the output's
  d.num_threads = -1  # grain reader threads (decode, resize, crop); -1: one per usable core,
  #                     shared among the run's processes on this host
  d.prefetch = 4  # batches prefetched ahead of the device

  # synthetic_posters: the embedded, procedurally drawn data set
  d.synthetic = s = ml_collections.ConfigDict()
  s.num_train = 3000
  s.num_validation = 500
  s.num_test = 1000
  s.height = 96  # size the posters are drawn (and stored) at
  s.width = 64
  s.seed = 0

  # movie_posters: MovieGenre.csv + a poster folder (or poster URLs to download)
  d.manual_dir = ""  # folder with the CSV and the posters
  d.csv = "MovieGenre.csv"  # relative to manual_dir, or absolute
  d.poster_dir = "posters"  # relative to manual_dir, or absolute
  d.download = False  # fetch missing posters from the CSV's Poster URLs
  d.id_column = "imdbId"
  d.genre_column = "Genre"  # pipe-separated or list-like; "" when genre_columns is used
  d.genre_columns = ()  # one 0/1 column per genre, instead of genre_column
  d.title_column = "Title"
  d.url_column = "Poster"
  d.file_pattern = "{id}.jpg"  # poster file name for an id
  d.top_k = 5  # the K most frequent genres (the paper: 5) ...
  d.genres = ()  # ... or an explicit list of genres ...
  d.min_count = 0  # ... or every genre with at least this many posters (when top_k == 0)
  d.keep_unlabeled = True  # keep rows with none of the chosen genres, with an all-zero label
  d.sample_size = 0  # sample this many rows (the paper: 6000); 0 = all
  d.sample_seed = 0
  d.split_fractions = (0.7, 0.1, 0.2)  # train / validation / test, by a hash of the id
  d.store_height = 0  # posters larger are resized at build time to this; 0: the size training
  d.store_width = 0  # reads (input / crop_fraction, more for random resized crops); -1: originals
  d.max_pixels = 40_000_000  # posters over this many pixels are skipped, before decoding

  # ---- model --------------------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.name = "custom_cnn"
  m.dtype = "float32"  # compute dtype; "bfloat16" on GPU/TPU
  m.dropout_rate = 0.5
  m.kwargs = ml_collections.ConfigDict()  # model-specific constructor arguments
  m.pretrained = ""  # torchvision checkpoint name (e.g. "resnet50") or a .pth path
  m.cache_dir = ""  # where downloaded weights are kept; "" = ~/.cache/jaxposter
  m.freeze_backbone = False  # train only the head (BatchNorm statistics frozen too)
  m.remat = False  # rematerialise dense layers (DenseNet) to save memory

  # ---- optimisation -------------------------------------------------------------------
  c.optimizer = o = ml_collections.ConfigDict()
  o.name = "adam"  # "adam", "adamw" or "sgd" (Nesterov momentum)
  o.learning_rate = 1e-4
  o.head_learning_rate = 0.0  # > 0: a separate learning rate for the head
  o.layer_decay = 1.0  # < 1: the backbone's k-th module below its top learns at decay**k x lr
  o.weight_decay = 0.0  # adamw and sgd
  o.momentum = 0.9  # sgd only
  o.b1 = 0.9
  o.b2 = 0.999
  o.grad_clip_norm = 0.0  # > 0: clip the global gradient norm

  c.schedule = sc = ml_collections.ConfigDict()
  sc.name = "constant"  # "constant" or "cosine"
  sc.warmup_epochs = 0.0

  # on-device training augmentation (jaxposter/augment.py); 0 leaves a transform out
  c.augment = au = ml_collections.ConfigDict()
  au.brightness = 0.0  # per-poster factors in [1 - x, 1 + x]
  au.contrast = 0.0
  au.saturation = 0.0
  au.mixup_alpha = 0.0  # > 0: mixup, lam ~ Beta(alpha, alpha), labels mixed alike
  au.cutmix_alpha = 0.0  # > 0: cutmix; with both set, cutmix on this share of batches:
  au.cutmix_prob = 0.5

  c.ema_decay = 0.0  # > 0: keep a moving average of the weights; validation, checkpoints'
  #                    eval and predict use it
  c.tta_flip = False  # eval / predict: average the poster's and its mirror image's probabilities

  c.loss = lo = ml_collections.ConfigDict()
  lo.name = "bce"  # "bce" (binary cross-entropy on logits) or "asl" (asymmetric loss)
  lo.pos_weight = False  # bce: weight each genre's positives by its negatives/positives ...
  lo.max_pos_weight = 10.0  # ... capped here
  lo.asl_gamma_pos = 0.0  # asl (Ridnik et al. 2021): focusing on positives ...
  lo.asl_gamma_neg = 4.0  # ... and on negatives
  lo.asl_clip = 0.05  # asl: negatives with p < clip cost nothing
  lo.label_smoothing = 0.0  # training targets y (1 - x) + x / 2

  c.threshold = "global"  # decision threshold for predict: "fixed" (0.5), "global", "per_genre"

  c.num_epochs = 10
  c.test_every_epoch = False  # score the test split after every epoch, not only the last
  c.batch_size = 64  # global: split over all devices of all hosts
  c.eval_batch_size = 64
  c.parallelism = "jit"
  # > 0: gradients summed in a fixed order over this many fixed shards of the global batch, so
  # a run gives bit-for-bit the same numbers on any device count dividing it, under jit and
  # pmap; BatchNorm then normalises each shard alone. 0: XLA's reduction order (fastest)
  c.reduction_shards = 0
  # CPU-only hosts: split the CPU into this many devices (0 = one per core, up to 8, dividing
  # the batch sizes); XLA:CPU runs devices side by side (jaxposter/runtime.py)
  c.cpu_devices = 0
  # CPU only: who computes convolution filter gradients (jaxposter/models/cpu_ops/): "auto"
  # (XLA's own on AVX-512 CPUs but for 128+ output channels over large maps, patches + matmul
  # elsewhere, 2x faster steps on AMD Zen 3), "patches" or "xla"
  c.cpu_filter_grad = "auto"
  c.compilation_cache = "~/.cache/jaxposter/xla"  # compiled programs kept on disk; "" = off

  # ---- checkpoints and logs ------------------------------------------------------------
  c.checkpoint = ck = ml_collections.ConfigDict()
  ck.keep = 2  # the last N epoch checkpoints are kept ...
  ck.keep_best = True  # ... and the best by `best_metric`:
  ck.best_metric = "val_mAP"  # or val_OF1_tuned, val_AUC, val_loss, val_OF1 (at 0.5: the paper's)
  ck.every_steps = 0  # > 0: also save every N steps mid-epoch (a killed run loses < N steps)
  c.tensorboard = False  # also write TensorBoard event files (needs the `plots` extra)
  c.log_every_steps = 10
  c.progress_bar = True
  return c
