"""Architecture hyper-parameters of a BERT encoder."""
import dataclasses
import json
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  hidden_act: str = "gelu"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_heads {self.num_heads}")
    if self.hidden_act not in ("gelu", "gelu_new", "relu"):
      raise ValueError(f"unsupported activation {self.hidden_act!r}")

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any]) -> "BertConfig":
    """Reads a Hugging Face `config.json` of a BERT model."""
    if hf.get("model_type", "bert") != "bert":
      raise ValueError(f"not a BERT checkpoint: model_type={hf.get('model_type')!r}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError("only absolute position embeddings are supported")
    return cls(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        hidden_act=hf.get("hidden_act", "gelu"),
    )

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "BertConfig":
    return cls(**values)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  def flops_per_token(self, seq_len: int) -> float:
    """Forward multiply-add FLOPs per token (2 per MAC), for benchmarks."""
    h, i = self.hidden_size, self.intermediate_size
    dense = 4 * h * h + 2 * h * i  # q, k, v, out; two FFN matmuls
    attention = 2 * seq_len * h  # scores and weighted sum
    return 2.0 * self.num_layers * (dense + attention)
