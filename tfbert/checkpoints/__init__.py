"""Model directories: tfbert, Hugging Face (safetensors), Google BERT (TF1), keras-hub presets."""

from tfbert.checkpoints.keras_hub import save_keras_hub_preset
from tfbert.checkpoints.model_dir import (
    assign_weights,
    build_task_model,
    detect_kind,
    load_encoder,
    load_model,
    load_pretrainer,
    model_values,
    read_bert_config,
    read_task_info,
    save_model,
)
from tfbert.errors import CheckpointError
from tfbert.tasks import TaskInfo

__all__ = ["CheckpointError", "TaskInfo", "assign_weights", "build_task_model", "detect_kind",
           "load_encoder", "load_model", "load_pretrainer", "model_values", "read_bert_config",
           "read_task_info", "save_keras_hub_preset", "save_model"]
