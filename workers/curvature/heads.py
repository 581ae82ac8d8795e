"""Split a causal LM into its body (embeddings, blocks, final norm) and its output head.

Chunked logits need the final hidden states and the output projection separately: the body runs
once per batch, then ``head(hidden)`` runs over a chunk of positions at a time, so no
(batch x sequence x vocabulary) tensor exists beyond one chunk. Found generically, from the
Hugging Face conventions every supported family follows:

* the body is ``getattr(model, model.base_model_prefix)`` (``model`` for Llama / Mistral / Qwen2 /
  OLMo / OLMo-2, ``transformer`` for GPT-2, ``gpt_neox`` for GPT-NeoX); its output's
  ``last_hidden_state`` already has the final norm applied (``norm``, ``ln_f``,
  ``final_layer_norm``);
* the head is ``model.get_output_embeddings()`` (``lm_head``, or ``embed_out`` for GPT-NeoX; tied to
  the input embeddings for GPT-2 -- tying changes nothing here, the head's weight is used as is).

Models whose logits are not just ``head(last_hidden_state)`` (a logit scale or soft-capping in the
config) or whose pieces are missing get ``None``: collection then takes the logits from the full
forward (one (positions x vocabulary) tensor per batch).

``split_classifier`` does the same for a ViT image classifier: body ``vit``, head ``classifier`` on
the final [CLS] state (``logits = classifier(last_hidden_state[:, 0])``); other image classifiers
get ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_LOGIT_TRANSFORMS = ("logit_scale", "final_logit_softcapping", "output_multiplier_scale", "logits_scaling")


@dataclass(frozen=True)
class BodyAndHead:
    """``body(input_ids=..., attention_mask=...).last_hidden_state`` fed to ``head`` gives the logits."""

    body: nn.Module
    head: nn.Module


def split_body_and_head(model: nn.Module) -> BodyAndHead | None:
    """The model's body and output head, or ``None`` when its logits are not ``head(hidden)``."""
    config = getattr(model, "config", None)
    for attr in _LOGIT_TRANSFORMS:
        value = getattr(config, attr, None)
        if value not in (None, 1, 1.0):
            return None
    prefix = getattr(model, "base_model_prefix", "")
    body = getattr(model, prefix, None) if prefix else None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(body, nn.Module) or body is model or not isinstance(head, nn.Linear):
        return None
    return BodyAndHead(body=body, head=head)


def split_classifier(model: nn.Module) -> BodyAndHead | None:
    """A ViT classifier's body and head (its logits are ``head(body(...).last_hidden_state[:, 0])``)."""
    body = getattr(model, "vit", None)
    head = getattr(model, "classifier", None)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != "vit" or not isinstance(body, nn.Module) or not isinstance(head, nn.Linear):
        return None
    return BodyAndHead(body=body, head=head)
