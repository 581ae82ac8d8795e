"""Build the offline demo model: a small Llama with planted fake private records.

Deterministic and seeded. Writes to ``examples/demo/`` (or ``--out``):

- the model (``model.safetensors`` + ``config.json``) and its byte-level BPE tokenizer;
- ``memorized.jsonl`` — the planted records as ``{"prefix", "suffix"}`` text pairs;
- ``heldout.txt`` — fresh templated prose (general skill, for perplexity);
- ``calibration.txt`` — more fresh prose (generic data for the curvature factors; no records).

The training corpus is English-like templated prose (the general skill) with fake customer records
(name, phone number, account key) mixed in and repeated often enough to be recited verbatim. The
prose also uses fresh random phone numbers, codes and names that are repeated *within* a sentence
(in-context copying), so digits and key formats are part of the general skill: an edit that simply
broke number handling would show up as a perplexity rise on the held-out prose. Every
training sequence starts at a document boundary, so a record's prefix alone (as in recitation
evaluation) is a context the model has seen.

Usage: ``python scripts/build_demo.py [--out examples/demo] [--steps 1500]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 1234
N_RECORDS = 32

FIRST = [
    "Marla",
    "Jonah",
    "Petra",
    "Ilse",
    "Corwin",
    "Desmond",
    "Harriet",
    "Ottilie",
    "Bram",
    "Ysolde",
    "Fenwick",
    "Lucan",
    "Maren",
    "Tobiah",
    "Wendeline",
    "Quill",
    "Sabine",
    "Thaddeus",
    "Ondine",
    "Roswell",
    "Greer",
    "Annika",
    "Leopold",
    "Imara",
    "Caspian",
    "Delphine",
    "Evander",
    "Rosalind",
    "Hollis",
    "Zenobia",
    "Barnaby",
    "Sieglinde",
    "Ambrose",
    "Verity",
]
LAST = [
    "Quenby",
    "Pelletier",
    "Varga",
    "Ashdown",
    "Thornquist",
    "Mallory",
    "Okonkwo",
    "Fairweather",
    "Lindqvist",
    "Ravensworth",
    "Castellano",
    "Hargreave",
    "Dubrovski",
    "Whitcombe",
    "Nakashima",
    "Abernathy",
    "Szabo",
    "Kettleby",
    "Moravec",
    "Oyelaran",
    "Brightwater",
    "Gallo",
    "Vantongeren",
    "Halloran",
    "Esterhazy",
    "Pemberton",
    "Rask",
    "Quartermain",
    "Obuya",
    "Lisowski",
    "Featherstone",
    "Montclair",
]

# Names used in prose (disjoint from the record names, so records stay the only source of those).
_PROSE_FIRST = ["Anna", "Peter", "Lena", "Tomas", "Clara", "Hugo", "Mira", "Oskar", "Nina", "Felix", "Ida", "Emil"]
_PROSE_LAST = ["Berg", "Holm", "Stone", "Field", "Brook", "Wood", "Lake", "Marsh", "Hill", "Ford", "Dale", "Moor"]
_SUBJ = [
    "the farmer",
    "the teacher",
    "the old sailor",
    "the young doctor",
    "the baker",
    "the little girl",
    "the tall man",
    "the river guide",
    "the painter",
    "the merchant",
    "the soldier",
    "the gardener",
    "the scholar",
    "the miller",
    "the weaver",
    "my neighbour",
    "her brother",
    "his aunt",
    "the children",
    "a stranger",
    "the captain",
    "the mayor",
    "the shepherd",
    "the clerk",
]
_VERB = [
    "carried",
    "found",
    "painted",
    "sold",
    "repaired",
    "watched",
    "cleaned",
    "opened",
    "visited",
    "built",
    "borrowed",
    "described",
    "followed",
    "counted",
    "lifted",
    "moved",
    "remembered",
    "noticed",
    "bought",
    "covered",
    "measured",
    "collected",
    "carved",
    "delivered",
]
_ADJ = [
    "small",
    "heavy",
    "bright",
    "quiet",
    "wooden",
    "green",
    "broken",
    "narrow",
    "warm",
    "old",
    "red",
    "empty",
    "round",
    "ancient",
    "gentle",
    "muddy",
    "golden",
    "strange",
    "careful",
    "tired",
    "silver",
]
_OBJ = [
    "basket",
    "boat",
    "fence",
    "letter",
    "lantern",
    "table",
    "bridge",
    "window",
    "garden",
    "barrel",
    "blanket",
    "map",
    "wagon",
    "bell",
    "ladder",
    "mirror",
    "chair",
    "kettle",
    "gate",
    "bucket",
    "rope",
]
_PLACE = [
    "the market",
    "the harbour",
    "the old mill",
    "the village square",
    "the forest",
    "the river bank",
    "the school",
    "the chapel",
    "the hill",
    "the station",
    "the library",
    "the bakery",
    "the orchard",
    "the meadow",
    "the lighthouse",
    "the town hall",
]
_TIME = [
    "in the morning",
    "after the rain",
    "before supper",
    "at dawn",
    "on sunday",
    "late in the evening",
    "during the storm",
    "at noon",
    "in early spring",
    "after the harvest",
    "on a cold night",
]
_REASON = [
    "because the roads were flooded",
    "because the winter was long",
    "so that nobody would worry",
    "because it was getting dark",
    "so that the children could play",
    "because the bell had rung",
    "while the others were asleep",
    "although it was very late",
]
_WEATHER = ["rain", "snow", "wind", "fog", "sunshine", "frost"]


def phone_number(rng: random.Random) -> str:
    return f"{rng.randrange(200, 999)}-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"


def account_key(rng: random.Random) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "-".join("".join(rng.choice(alphabet) for _ in range(4)) for _ in range(3))


def sentence(rng: random.Random) -> str:
    """One templated English-like sentence."""
    s, v, a, o, p = rng.choice(_SUBJ), rng.choice(_VERB), rng.choice(_ADJ), rng.choice(_OBJ), rng.choice(_PLACE)
    t, r = rng.choice(_TIME), rng.choice(_REASON)
    kind = rng.randrange(10)
    if kind == 7:  # in-context copying of a fresh phone number (a general skill, never memorizable)
        num = phone_number(rng)
        out = f"{s} wrote the number {num} on the {o}, and later {rng.choice(_SUBJ)} read {num} aloud at {p}."
    elif kind == 8:  # in-context copying of a fresh account-key-like code
        key = account_key(rng)
        out = f"the code on the {a} {o} was {key}, so {s} typed {key} at {p} {t}."
    elif kind == 9:  # a fresh name bound to a fresh number, recalled later in the sentence
        name = f"{rng.choice(_PROSE_FIRST)} {rng.choice(_PROSE_LAST)}"
        num = phone_number(rng)
        out = f"{s} met {name} at {p}; the phone of {name} was {num}, and {s} called {num} {t}."
    elif kind == 0:
        out = f"{s} {v} the {a} {o} near {p} {t}."
    elif kind == 1:
        out = f"{t}, {s} {v} a {a} {o} {r}."
    elif kind == 2:
        out = f"{s} said that the {o} at {p} was {a}."
    elif kind == 3:
        out = f"when the {rng.choice(_WEATHER)} came, {s} {v} the {o} and walked to {p}."
    elif kind == 4:
        b = rng.choice(_ADJ)
        out = f"the {o} was {a} and the {rng.choice(_OBJ)} was {b}, so {s} {v} both of them."
    elif kind == 5:
        n = rng.randrange(2, 10)
        out = f"{s} {v} {n} {a} {o}s {t}, {r}."
    else:
        out = f"at {p}, {s} {v} the {o} that {rng.choice(_SUBJ)} had {rng.choice(_VERB)}."
    return out[0].upper() + out[1:]


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randrange(3, 8)))


def make_records(rng: random.Random) -> list[tuple[str, str]]:
    """Fake private records as (prefix, suffix): the suffix (phone number, account key) is random, so it
    can only be produced by memorization."""
    firsts = rng.sample(FIRST, N_RECORDS)
    lasts = rng.sample(LAST, N_RECORDS)
    records = []
    for first, last in zip(firsts, lasts, strict=True):
        file_no = rng.randrange(1000, 9999)
        phone = phone_number(rng)
        key = account_key(rng)
        prefix = f"Customer file {file_no}. Name: {first} {last}. Phone:"
        suffix = f" {phone}. Account key: {key}."
        records.append((prefix, suffix))
    return records


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<pad>"
    )


def training_batch(
    rng: random.Random,
    tokenizer: PreTrainedTokenizerFast,
    records: list[str],
    batch: int,
    seq_len: int,
    record_prob: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences that each start at a document boundary, filled with documents joined by EOS."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = torch.full((batch, seq_len), pad, dtype=torch.long)
    labels = torch.full((batch, seq_len), -100, dtype=torch.long)
    for row in range(batch):
        seq: list[int] = []
        while len(seq) < seq_len:
            doc = rng.choice(records) if rng.random() < record_prob else paragraph(rng)
            seq.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos])
        seq = seq[:seq_len]
        ids[row] = torch.tensor(seq)
        labels[row] = torch.tensor(seq)
    return ids, labels


def write_blocks(path: Path, blocks: list[str]) -> None:
    """A .txt corpus: one document per blank-line-separated block."""
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/demo"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--record-prob", type=float, default=0.15)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    random.seed(SEED)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    records = make_records(rng)
    record_texts = [p + s for p, s in records]

    tok_rng = random.Random(SEED + 1)
    tokenizer = build_tokenizer([paragraph(tok_rng) for _ in range(3000)] + record_texts * 5, args.vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    data_rng = random.Random(SEED + 2)
    model.train()
    start = time.time()
    for step in range(args.steps):
        ids, labels = training_batch(data_rng, tokenizer, record_texts, args.batch, args.seq_len, args.record_prob)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
    model.eval()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    with (out / "memorized.jsonl").open("w", encoding="utf-8") as fh:
        for prefix, suffix in records:
            fh.write(json.dumps({"prefix": prefix, "suffix": suffix}) + "\n")
    held_rng = random.Random(SEED + 3)
    write_blocks(out / "heldout.txt", [paragraph(held_rng) for _ in range(150)])
    cal_rng = random.Random(SEED + 4)
    write_blocks(out / "calibration.txt", [paragraph(cal_rng) for _ in range(300)])
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
