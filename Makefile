# Two commands: `make demo` and `make test`. Each creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every package the two commands install, with exact versions and hashes (CPython 3.11, Linux x86-64); `make lock`
# regenerates it from pyproject.toml keeping the locked versions, `make lock UPGRADE=1` moves to the newest allowed.
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
# Deterministic, quiet, offline W&B by default; a user may export WANDB_MODE=online.
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install lock demo test test-fast results ensemble shift-results robust-results generalisation-results enlighten-results seg-results randomization-results benchmarks benchmarks-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	@$(BIN)/python -c "import platform, sys; ok = sys.version_info[:2] == (3, 11) and platform.system() == 'Linux' \
	  and platform.machine() == 'x86_64'; sys.exit(0 if ok else '$(LOCK) pins wheels for CPython 3.11 on Linux x86-64, \
	  this is Python ' + platform.python_version() + ' on ' + platform.system() + ' ' + platform.machine() + \
	  ': install with pip install -e \".[dev]\" (the compatible ranges of pyproject.toml) instead')"
	$(BIN)/python -m pip install --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

UV_VERSION := 0.13.9
lock: $(BIN)/python
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-emit-index-url --custom-compile-command "make lock" \
	  $(if $(UPGRADE),--upgrade) -o $(LOCK)

# The embedded benchmark, synthetic font digits -> real MNIST: source-only, then CDAN+E (the best method in
# docs/results.md), one after the other (~8 min).
# Each demo writes into a directory of its own (runs/demo/<time>/), so an earlier demo's records are kept. One CPU
# thread per run, as `make results`: the numbers depend on the intra-op thread count, so they no longer change with
# the machine's number of cores.
DEMO_DIR := runs/demo/$(shell date +%Y%m%d-%H%M%S)
demo: export OMP_NUM_THREADS := 1
demo: install
	$(BIN)/syn2real fit --config configs/digits/base.yaml --config configs/digits/source_only.yaml \
	  --trainer.default_root_dir $(DEMO_DIR)/source_only
	$(BIN)/syn2real fit --config configs/digits/base.yaml --config configs/digits/cdan.yaml \
	  --trainer.default_root_dir $(DEMO_DIR)/cdan
	$(BIN)/syn2real compare source-only=$(DEMO_DIR)/source_only/metrics.json CDAN+E=$(DEMO_DIR)/cdan/metrics.json

test: install
	$(BIN)/python -m pytest -ra

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow"

# Every digits result of docs/results.md: 3 seeds per method, stages chained through checkpoints
# (source-only -> ADDA / self-training / CyCADA pixel -> CyCADA feature; DANN, CDAN -> self-training), then the
# mean ± std tables.
# Finished runs (with metrics.json) are skipped, and a run interrupted after its first checkpoint resumes from it
# (`--ckpt_path auto`), so an interrupted `make results` continues.
# Every run uses one CPU thread (OMP_NUM_THREADS=1): the numbers depend on the intra-op thread count (the order of
# floating-point sums), so pinning it keeps them from changing with the machine's core count. The seeds of each
# method train side by side, one per core (`make results JOBS=1` one after another, `JOBS=3` or `make -j3 results`
# three; no number changes). A line per run names it, the runs of this table done so far and the minutes so far.
SEEDS ?= 0 1 2
R := runs/results
FIT = $(BIN)/syn2real fit --trainer.enable_progress_bar false --ckpt_path auto
JOBS ?= $(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),$(shell nproc 2>/dev/null || echo 1))
START := $(shell date +%s)
RESULT_RUNS = source_only adda cbst_from_source crst_from_source dann cbst_from_dann crst_from_dann cdan \
  cbst_from_cdan crst_from_cdan oracle cycada_pixel cycada_feature source_only_on_translated cycada_pixel_no_semantic
progress = echo "[results] $(1) seed $$s: starting ($$(ls $(foreach m,$(RESULT_RUNS),$(R)/$(m)/seed*/metrics.json) \
  2>/dev/null | wc -l) of $$(( $(words $(RESULT_RUNS)) * $(words $(SEEDS)) )) runs done, \
  $$(( ($$(date +%s) - $(START)) / 60 )) min)"
# $(2): a config of configs/digits/ (after configs/digits/base.yaml); fit_seeds_inline: of any folder under it, after
# that folder's base.yaml
define fit_seeds
	@printf '%s\n' $(SEEDS) | xargs -P $(JOBS) -I{} sh -c 's={}; d=$(R)/$(1)/seed$$s; [ -f $$d/metrics.json ] && exit 0; \
	  $(call progress,$(1)); \
	  $(FIT) --config configs/digits/base.yaml --config configs/digits/$(2).yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d $(3)' || exit 1
endef
define fit_seeds_inline
for s in $(SEEDS); do d=$(R)/$(1)/seed$$s; [ -f $$d/metrics.json ] && continue; \
	  $(FIT) --config $(dir configs/digits/$(2))base.yaml --config configs/digits/$(2).yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d || exit 1; done
endef
CYCADA_STAGE3 = --model.init_args.source_checkpoint $(R)/cycada_pixel/seed$$s/checkpoints/last.ckpt \
  --model.init_args.source_translator $(R)/cycada_pixel/seed$$s/checkpoints/last.ckpt
results: export OMP_NUM_THREADS := 1
results: install
	$(call fit_seeds,source_only,source_only,)
	$(call fit_seeds,adda,adda,--model.init_args.source_checkpoint $(R)/source_only/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,cbst_from_source,cbst,--model.init_args.init_checkpoint $(R)/source_only/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,crst_from_source,crst,--model.init_args.init_checkpoint $(R)/source_only/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,dann,dann,)
	$(call fit_seeds,cbst_from_dann,cbst.yaml --config configs/digits/after_adaptation,--model.init_args.init_checkpoint $(R)/dann/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,crst_from_dann,crst.yaml --config configs/digits/after_adaptation,--model.init_args.init_checkpoint $(R)/dann/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,cdan,cdan,)
	$(call fit_seeds,cbst_from_cdan,cbst.yaml --config configs/digits/after_adaptation,--model.init_args.init_checkpoint $(R)/cdan/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,crst_from_cdan,crst.yaml --config configs/digits/after_adaptation,--model.init_args.init_checkpoint $(R)/cdan/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,mic_from_cdan,mic,--model.init_args.init_checkpoint $(R)/cdan/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,drst_from_cdan,drst.yaml --config configs/digits/after_adaptation,--model.init_args.init_checkpoint $(R)/cdan/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,oracle,oracle,)
	$(call fit_seeds,cycada_pixel,cycada_pixel,--model.init_args.teacher_checkpoint $(R)/source_only/seed$$s/checkpoints/best.ckpt)
	$(call fit_seeds,cycada_feature,cycada_feature,$(CYCADA_STAGE3))
	for s in $(SEEDS); do d=$(R)/source_only_on_translated/seed$$s; [ -f $$d/metrics.json ] && continue; \
	  $(call progress,source_only_on_translated); \
	  $(BIN)/syn2real translate --ckpt $(R)/cycada_pixel/seed$$s/checkpoints/last.ckpt --no_progress \
	    --input $${SYN2REAL_CACHE:-$$HOME/.cache/syn2real}/digits/synthetic_n20000_s0 \
	    --output $(R)/translated_digits/seed$$s || exit 1; \
	  $(FIT) --config configs/digits/base.yaml --config configs/digits/source_only.yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d \
	    --data.init_args.source.root $(R)/translated_digits/seed$$s || exit 1; done
	$(call fit_seeds,cycada_pixel_no_semantic,cycada_pixel.yaml --config configs/digits/ablations/cycada_no_semantic,\
	  --model.init_args.teacher_checkpoint $(R)/source_only/seed$$s/checkpoints/best.ckpt)
	for m in source_only dann cdan adda cbst_from_source crst_from_source cbst_from_dann crst_from_dann \
	  cbst_from_cdan crst_from_cdan mic_from_cdan drst_from_cdan oracle cycada_pixel cycada_feature cycada_pixel_no_semantic \
	  source_only_on_translated; do \
	  echo "== $$m"; $(BIN)/syn2real aggregate $(R)/$$m/seed*/metrics.json || exit 1; done
	$(BIN)/syn2real aggregate --selection $(R)/dann/seed*/metrics.json $(R)/cdan/seed*/metrics.json \
	  $(R)/adda/seed*/metrics.json $(R)/c*st_from_*/seed*/metrics.json
	$(MAKE) robust-results
	$(MAKE) generalisation-results
	env -u OMP_NUM_THREADS $(MAKE) enlighten-results  # its table was measured with the default thread count

# A deep ensemble on the embedded digits (Lakshminarayanan et al. 2017; Ovadia et al. 2019 compare it under shift):
# K members of configs/digits/$(ENSEMBLE_CONFIG).yaml with seeds 0..K-1 in $(E)/seed<k> (finished members skipped,
# interrupted ones resumed with `--ckpt_path auto`, as `make results`), then the ensemble's test metrics
# ($(E)/ensemble/eval/test/metrics.json, with target/disagreement) and its report card ($(E)/ensemble/robustness).
# `make ensemble K=3 ENSEMBLE_CONFIG=dann`.
K ?= 5
ENSEMBLE_CONFIG ?= source_only
E = runs/ensemble/$(ENSEMBLE_CONFIG)
ENSEMBLE_ARGS = --config configs/digits/base.yaml --config configs/digits/$(ENSEMBLE_CONFIG).yaml
ENSEMBLE_CKPTS = $(foreach s,$(shell seq 0 $$(( $(K) - 1 ))),$(E)/seed$(s)/checkpoints/best.ckpt)
ensemble: install
	$(BIN)/syn2real ensemble fit --members $(K) --root $(E) $(ENSEMBLE_ARGS) --trainer.enable_progress_bar false
	[ -f $(E)/ensemble/eval/test/metrics.json ] || $(BIN)/syn2real ensemble test --ckpt $(ENSEMBLE_CKPTS) \
	  $(ENSEMBLE_ARGS) --eval_name test --trainer.enable_progress_bar false
	[ -f $(E)/ensemble/robustness/robustness.json ] || $(BIN)/syn2real robustness $(ENSEMBLE_ARGS) \
	  --ckpt $(ENSEMBLE_CKPTS) --no_wandb
	$(BIN)/syn2real aggregate $(E)/seed*/metrics.json

# Accuracy and calibration under shift (docs/results.md): source-only digits models trained on synthetic digits, scored
# on 2,000 real digits (seeded subset) clean and under the 15 corruptions x 5 severities: one model, the same with the
# source-fitted temperature, ensembles of 5, MC dropout (20 passes), AugMix, an AugMix ensemble of 5; then the figure.
SHIFT = $(R)/shift
SO_ARGS = --config configs/digits/base.yaml --config configs/digits/source_only.yaml --trainer.logger false
CARD = $(BIN)/syn2real robustness --eps --apgd_iters 0 --noise --max_angle 0 --max_shift 0 --max_images 2000 --no_wandb
shift-results: export OMP_NUM_THREADS := 1
shift-results: install
	for k in 0 1 2; do $(BIN)/syn2real ensemble fit --members 5 --first_seed $$((5 * k)) \
	  --root $(R)/ensemble/source_only/set$$k $(SO_ARGS) --trainer.enable_progress_bar false || exit 1; done
	for s in 0 1 2 3 4; do d=$(SHIFT)/augmix/seed$$s; [ -f $$d/metrics.json ] || $(FIT) $(SO_ARGS) \
	  --config configs/digits/ablations/augmix.yaml --seed_everything $$s --trainer.default_root_dir $$d || exit 1; done
	for s in 0 1 2; do d=$(SHIFT)/dropout/seed$$s; [ -f $$d/metrics.json ] || $(FIT) $(SO_ARGS) \
	  --config configs/digits/ablations/dropout.yaml --seed_everything $$s --trainer.default_root_dir $$d || exit 1; done
	for s in 0 1 2 3 4; do d=$(R)/ensemble/source_only/set0/seed$$s; \
	  [ -f $(SHIFT)/cards/vanilla/$$s/robustness.json ] || $(CARD) --config $$d/config.yaml --ckpt $$d/checkpoints/best.ckpt \
	    --output $(SHIFT)/cards/vanilla/$$s || exit 1; \
	  [ -f $(SHIFT)/cards/ts_source/$$s/robustness.json ] || $(CARD) --config $$d/config.yaml \
	    --ckpt $$d/checkpoints/best.ckpt --temperature source --output $(SHIFT)/cards/ts_source/$$s || exit 1; \
	  d=$(SHIFT)/augmix/seed$$s; [ -f $(SHIFT)/cards/augmix/$$s/robustness.json ] || $(CARD) --config $$d/config.yaml \
	    --ckpt $$d/checkpoints/best.ckpt --output $(SHIFT)/cards/augmix/$$s || exit 1; done
	for k in 0 1 2; do [ -f $(SHIFT)/cards/ensemble5/$$k/robustness.json ] || $(CARD) \
	  --config $(R)/ensemble/source_only/set$$k/seed$$((5 * k))/config.yaml \
	  --ckpt $(R)/ensemble/source_only/set$$k/seed*/checkpoints/best.ckpt --output $(SHIFT)/cards/ensemble5/$$k || exit 1; done
	for s in 0 1 2; do d=$(SHIFT)/dropout/seed$$s; [ -f $(SHIFT)/cards/mc_dropout/$$s/robustness.json ] || $(CARD) \
	  --config $$d/config.yaml --ckpt $$d/checkpoints/best.ckpt --mc_dropout 20 --output $(SHIFT)/cards/mc_dropout/$$s \
	  || exit 1; done
	[ -f $(SHIFT)/cards/augmix_ensemble5/0/robustness.json ] || $(CARD) --config $(SHIFT)/augmix/seed0/config.yaml \
	  --ckpt $(SHIFT)/augmix/seed*/checkpoints/best.ckpt --output $(SHIFT)/cards/augmix_ensemble5/0
	$(BIN)/syn2real shift --output docs/images/shift_digits.png --wandb_dir $(SHIFT) \
	  --title "synthetic digits -> 2,000 real MNIST digits under 15 corruptions (mean over types)" \
	  $(foreach l,vanilla ts_source ensemble5 mc_dropout augmix augmix_ensemble5,\
	    $$(for f in $(SHIFT)/cards/$(l)/*/robustness.json; do printf -- '--report %s=%s ' $(l) $$f; done))

# Robustness on 4,000 real MNIST digits (tested on the other 1,000): six trainings x seeds, then the report card
# of each checkpoint (corrupted test images are cached, so only the first card pays for them).
ROBUST = standard advprop jacobian worst_of_10 pgd augmix
robust-results: export OMP_NUM_THREADS := 1
robust-results: install
	for m in $(ROBUST); do $(call fit_seeds_inline,robust/$$m,robust/$$m); done
	for m in $(ROBUST); do for s in $(SEEDS); do d=$(R)/robust/$$m/seed$$s; \
	  [ -f $$d/robustness/robustness.json ] && continue; \
	  $(BIN)/syn2real robustness --config configs/digits/robust/base.yaml --config configs/digits/robust/$$m.yaml \
	    --ckpt $$d/checkpoints/last.ckpt --eps 0.3 \
	    --no_wandb || exit 1; done; done
	for m in standard pgd; do for s in $(SEEDS); do d=$(R)/robust/$$m/seed$$s; \
	  [ -f $$d/robustness_madry/robustness.json ] && continue; \
	  $(BIN)/syn2real robustness --config configs/digits/robust/base.yaml --config configs/digits/robust/$$m.yaml \
	    --ckpt $$d/checkpoints/last.ckpt --eps 0.3 \
	    --pgd_step_size 0.01 --corruptions none --max_angle 0 --max_shift 0 --noise --no_wandb \
	    --output $$d/robustness_madry || exit 1; done; done
	for m in $(ROBUST); do echo "== $$m"; \
	  $(BIN)/syn2real aggregate $(R)/robust/$$m/seed*/robustness/robustness.json || exit 1; done
	for m in standard pgd; do echo "== $$m, PGD-40 with Madry et al.'s step 0.01"; \
	  $(BIN)/syn2real aggregate $(R)/robust/$$m/seed*/robustness_madry/robustness.json || exit 1; done
	$(BIN)/syn2real shift --output docs/images/shift_digits_real.png --wandb_dir $(R)/robust \
	  --title "trained on 4,000 real MNIST digits, tested on 1,000 others under 15 corruptions (mean over types)" \
	  $(foreach l,standard augmix pgd,$$(for f in $(R)/robust/$(l)/seed*/robustness/robustness.json; do \
	    printf -- '--report %s=%s ' $(l) $$f; done))

# EnlightenGAN on the real photos that scikit-image and foolbox ship, darkened by data_prep/lowlight.py: 3 seeds,
# then PSNR/SSIM of each seed's enhanced test photos vs the dark input, gamma correction and histogram equalisation.
LOWLIGHT ?= data/lowlight_photos
enlighten-results: install
	[ -f $(LOWLIGHT)/manifest.json ] || $(BIN)/python data_prep/lowlight.py --from_packages --output $(LOWLIGHT)
	for s in $(SEEDS); do d=$(R)/enlightengan/seed$$s; \
	  [ -f $$d/metrics.json ] || $(FIT) --config configs/enlightengan/base.yaml \
	    --config configs/enlightengan/lowlight_photos.yaml --seed_everything $$s \
	    --data.init_args.root $(LOWLIGHT) --trainer.default_root_dir $$d || exit 1; \
	  [ -f $$d/enhanced/enhance_eval.json ] || $(BIN)/syn2real enhance --ckpt $$d/checkpoints/last.ckpt --no_progress \
	    --input $(LOWLIGHT)/test/low --output $$d/enhanced --reference $(LOWLIGHT)/test/reference \
	    --figure $$d/examples.png || exit 1; done
	$(BIN)/syn2real aggregate $(R)/enlightengan/seed*/metrics.json
	$(BIN)/syn2real aggregate $(R)/enlightengan/seed*/enhanced/enhance_eval.json

# Synthetic-to-real generalisation (no real digit seen in training): ImageNet EfficientNet-Lite0 fine-tuned on
# synthetic digits, evaluated on real MNIST; plain fine-tuning, ASG, ASG + L2O, CSG x seeds (~3-4 min per run on one
# CPU thread), then mean ± std (accuracy, KL to the ImageNet model, hyperspherical energy).
GENERALISATION = finetune asg asg_l2o csg
generalisation-results: install
	for m in $(GENERALISATION); do for s in $(SEEDS); do d=$(R)/generalisation/$$m/seed$$s; \
	  [ -f $$d/metrics.json ] && continue; OMP_NUM_THREADS=1 $(FIT) --config configs/digits/generalisation/base.yaml \
	    --config configs/digits/generalisation/$$m.yaml \
	    --seed_everything $$s --trainer.default_root_dir $$d || exit 1; done; done
	for m in $(GENERALISATION); do echo "== $$m"; \
	  $(BIN)/syn2real aggregate $(R)/generalisation/$$m/seed*/metrics.json || exit 1; done

# Segmentation on the embedded digits canvases (synthetic -> real MNIST strokes, 11 classes, mIoU): source only, then
# AdvEnt and CBST from each seed's source-only checkpoint, and the in-domain oracle; mean ± std (~1-3 min per run on
# one CPU thread).
SEG_METHODS = source_continued advent cbst dacs mic
seg-results: install
	for m in source_only oracle; do for s in $(SEEDS); do d=$(R)/digits_seg/$$m/seed$$s; [ -f $$d/metrics.json ] && continue; \
	  OMP_NUM_THREADS=1 $(FIT) --config configs/digits_seg/base.yaml --config configs/digits_seg/$$m.yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d || exit 1; done; done
	for m in $(SEG_METHODS); do for s in $(SEEDS); do d=$(R)/digits_seg/$$m/seed$$s; [ -f $$d/metrics.json ] && continue; \
	  OMP_NUM_THREADS=1 $(FIT) --config configs/digits_seg/base.yaml --config configs/digits_seg/$$m.yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d \
	    --model.init_args.init_checkpoint $(R)/digits_seg/source_only/seed$$s/checkpoints/last.ckpt || exit 1; done; done
	for s in $(SEEDS); do d=$(R)/digits_seg/advent_lambda0.01/seed$$s; [ -f $$d/metrics.json ] && continue; \
	  OMP_NUM_THREADS=1 $(FIT) --config configs/digits_seg/base.yaml --config configs/digits_seg/advent.yaml --seed_everything $$s \
	    --trainer.default_root_dir $$d \
	    --model.init_args.lambda_adv [0.01] \
	    --model.init_args.init_checkpoint $(R)/digits_seg/source_only/seed$$s/checkpoints/last.ckpt || exit 1; done
	for m in source_only $(SEG_METHODS) advent_lambda0.01 oracle; do echo "== $$m"; \
	  $(BIN)/syn2real aggregate $(R)/digits_seg/$$m/seed*/metrics.json || exit 1; done

# Domain and style randomisation (docs/results.md): source-only and CDAN+E on synthetic digits rendered at each
# cumulative randomisation level of the renderer (data.randomization; the default level, photometric, is the main
# table's source_only / cdan runs), then RandConv styles (configs/*/ablations/randconv.yaml, split BatchNorm) on the
# source-only digits and digit-canvas segmentation runs; 3 seeds each, one CPU thread per run (the numbers depend on
# the thread count), the seeds side by side.
DR_LEVELS = fonts geometry stroke texture
randomization-results: export OMP_NUM_THREADS := 1
randomization-results: install
	$(call fit_seeds,source_only,source_only,)
	$(call fit_seeds,cdan,cdan,)
	$(call fit_seeds,randomization/fonts/source_only,source_only,--data.init_args.randomization fonts)
	$(call fit_seeds,randomization/geometry/source_only,source_only,--data.init_args.randomization geometry)
	$(call fit_seeds,randomization/stroke/source_only,source_only,--data.init_args.randomization stroke)
	$(call fit_seeds,randomization/texture/source_only,source_only,--data.init_args.randomization texture)
	$(call fit_seeds,randomization/fonts/cdan,cdan,--data.init_args.randomization fonts)
	$(call fit_seeds,randomization/geometry/cdan,cdan,--data.init_args.randomization geometry)
	$(call fit_seeds,randomization/stroke/cdan,cdan,--data.init_args.randomization stroke)
	$(call fit_seeds,randomization/texture/cdan,cdan,--data.init_args.randomization texture)
	$(call fit_seeds,randconv/source_only_split_bn,source_only.yaml --config configs/digits/ablations/randconv,)
	for m in source_only randconv_split_bn; do for s in $(SEEDS); do d=$(R)/digits_seg/$$m/seed$$s; \
	  [ -f $$d/metrics.json ] && continue; c=configs/digits_seg/source_only.yaml; \
	  [ $$m = randconv_split_bn ] && c="$$c --config configs/digits_seg/ablations/randconv.yaml"; \
	  OMP_NUM_THREADS=1 $(FIT) --config configs/digits_seg/base.yaml --config $$c --seed_everything $$s \
	    --trainer.default_root_dir $$d || exit 1; done; done
	for m in source_only cdan; do for l in $(DR_LEVELS) photometric; do echo "== $$m, randomization $$l"; \
	  d=$(R)/randomization/$$l/$$m; [ $$l = photometric ] && d=$(R)/$$m; \
	  $(BIN)/syn2real aggregate $$d/seed*/metrics.json || exit 1; done; done
	for d in $(R)/randconv/source_only_split_bn $(R)/digits_seg/source_only $(R)/digits_seg/randconv_split_bn; do \
	  echo "== $$d"; \
	  $(BIN)/syn2real aggregate $$d/seed*/metrics.json || exit 1; done

benchmarks: install
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/loader_throughput.py
	$(BIN)/python benchmarks/dann_step.py --backbone digits_cnn --size 28 --batch 64 --steps 40 --rounds 3
	$(BIN)/python benchmarks/cycada_step.py --size 28 --batch 64 --ngf 16 --ndf 32 --blocks 6 --steps 10 --rounds 3
	$(BIN)/python benchmarks/mean_teacher_step.py --size 48 --batch 32 --steps 10 --rounds 3
	$(BIN)/python benchmarks/adversarial_step.py --backbone digits_cnn --size 28 --batch 64 --pgd_steps 7 --steps 10 --rounds 3
	$(BIN)/python benchmarks/enhance_tiled.py --height 1024 --width 2048 --tile 512 --overlap 32 --rounds 3
	$(BIN)/python benchmarks/precision_step.py --device cpu --threads 2 --size 512 --batch 1 --steps 2 --rounds 2 --warmup 1
	$(BIN)/python benchmarks/precision_step.py --task classification --device cpu --threads 2 --batch 8 --steps 3 --rounds 2 --warmup 1
	$(BIN)/python benchmarks/ddp_throughput.py --steps 40 --warmup 5 --rounds 3

# on a machine with a CUDA GPU: ResNet-101 classification and DeepLabV2-R101, fp32 / channels_last / bf16 / compile
benchmarks-gpu: install
	mkdir -p runs/benchmarks
	$(BIN)/python benchmarks/precision_step.py --task classification --device cuda --batch 64 --steps 20 --rounds 3 \
	  --compile --json runs/benchmarks/resnet101_classification_cuda.json
	$(BIN)/python benchmarks/precision_step.py --device cuda --batch 2 --steps 20 --rounds 3 --compile \
	  --json runs/benchmarks/deeplabv2_r101_cuda.json

clean:
	rm -rf runs wandb lightning_logs .pytest_cache
