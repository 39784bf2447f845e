"""The names of what a run directory holds, in one place: the trainer writes them, inference, evaluation and the
output-directory rule (outdir.py) read them (docs/architecture.md, "Data flow")."""

RUN_FILE = "run.json"  # what was trained on what: kind, shards, experiment, model config
POLICY_FILE = "policy.json"  # what inference needs besides the weights (runs/spec.py)
ADAPTER_FILE = "adapter.json"  # the calibrated risk-gated adapter (paper 4.3)
BASE_INFO = "base_info.json"  # a `sigma train-base` directory's record
MODEL_DIR = "model"  # the final model
BASE_DIR = "base"  # a Sigma run's own copy of its embedded base
CHECKPOINTS_DIR = "checkpoints"
TRAIN_CONFIG, PARAM_REPORT, SUMMARY = "train_config.json", "param_report.json", "summary.json"
TRAIN_LOG, VAL_LOG, PLOT_FILE, TENSORBOARD = "train_log.csv", "val_log.csv", "loss_dynamics.png", "tensorboard"

DEMO_FILE = "demo.json"  # `sigma demo` marks its directory: {"quick": bool}, so a report can say it is a smoke test

RUN_ENTRIES = (RUN_FILE, TRAIN_CONFIG, PARAM_REPORT, TRAIN_LOG, VAL_LOG, SUMMARY, MODEL_DIR, CHECKPOINTS_DIR,
               TENSORBOARD, PLOT_FILE, ADAPTER_FILE, POLICY_FILE, BASE_DIR)
