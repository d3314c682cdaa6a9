"""EngineConfig: every setting of an Engine, typed and validated once.

Each front end builds one (the CLI from its flags, `serve` into its Settings,
batch, Ray Data and Ray Serve from what they are handed) and passes it as it
is: to `Engine(config)`, into the job worker process (as JSON), to batch's
child processes and to Ray actors. Adding a setting means adding a field here
(with its `flag` and help) and honouring it in the Engine: the CLI flag, the
worker, batch and Ray paths carry it without further change.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidInput
from ..models.registry import DEFAULT_MODEL
from ..spec import format_validation_error

Offload = Literal["none", "model", "sequential"]
DType = Literal["fp16", "bf16", "fp32"]
MemoryMode = Literal["auto", "none"]
Attention = Literal["sdpa", "math"]


class EngineConfig(BaseModel):
    """How to load and run a model. `x-flag` (json_schema_extra) names a setting's CLI flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="a registry name (svd, svd-xt, svd-xt-1-1, tiny, demo), a local folder, a single-file checkpoint (svd_xt.safetensors) or a hub id",
                       json_schema_extra={"x-flag": "--model", "x-short": "-m"})
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps", json_schema_extra={"x-flag": "--device"})
    dtype: Optional[DType] = Field(None, description="default: fp16 on GPU, fp32 on CPU", json_schema_extra={"x-flag": "--dtype"})
    offload: Offload = Field("none", description="move idle parts of the model to the CPU to save GPU memory",
                             json_schema_extra={"x-flag": "--offload"})
    forward_chunking: bool = Field(False, description="chunk the UNet's feed-forward layers (less memory, a little slower)",
                                   json_schema_extra={"x-flag": "--forward-chunking"})
    memory: MemoryMode = Field("auto", description="auto: pick the fastest plan that fits free memory and step down on "
                               "out-of-memory; none: as given", json_schema_extra={"x-flag": "--memory"})
    max_memory: Optional[int] = Field(None, ge=1, description="plan for at most this much device memory, e.g. 8GB "
                                      "(default: the device's free memory)",
                                      json_schema_extra={"x-flag": "--max-memory", "x-metavar": "SIZE", "x-text": True})
    compile: bool = Field(False, description="torch.compile the UNet and VAE decoder (slow first run, cached; same output)",
                          json_schema_extra={"x-flag": "--compile"})
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: torch's; 1-2 when several "
                                   "processes share a machine)", json_schema_extra={"x-flag": "--threads"})
    attention: Attention = Field("sdpa", description="attention kernel: sdpa (PyTorch's fused kernel) or math "
                                 "(diffusers' plain attention, for a device where SDPA fails: slower, more memory)",
                                 json_schema_extra={"x-flag": "--attention"})
    # not flags: the engine's default decode chunk, and how a model is fetched
    decode_chunk_size: Optional[int] = Field(None, ge=1, le=64)
    download: bool = True
    progress: bool = True

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size(cls, v):
        if v is None or isinstance(v, int):
            return v
        from ..util import parse_size

        return parse_size(v)

    # ------------------------------------------------------------------
    @classmethod
    def build(cls, **fields: Any) -> "EngineConfig":
        """Validate user input; raise InvalidInput naming the bad setting. None means "the default"."""
        try:
            return cls(**{k: v for k, v in fields.items() if v is not None})
        except ValidationError as e:
            raise InvalidInput(format_validation_error(e, "engine setting", _flag)) from None

    def replace(self, **fields: Any) -> "EngineConfig":
        """A copy with some settings changed (validated)."""
        return EngineConfig.build(**{**self.model_dump(), **fields})

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict) -> "EngineConfig":
        return cls.build(**data)

    @property
    def device_or_none(self) -> Optional[str]:
        return None if self.device == "auto" else self.device


def _flag(name: str) -> str:
    """A setting as the user names it: its flag where it has one."""
    field = EngineConfig.model_fields.get(name)
    return (field.json_schema_extra or {}).get("x-flag", name) if field else name
