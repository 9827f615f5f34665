"""A real small data set no one here wrote: English names and their French names, from iso-codes.

    python examples/iso_names.py --out data/iso_fr          # data/iso_fr/{train,val}.jsonl
    minillm train --data data/iso_fr/train.jsonl --eval-data data/iso_fr/val.jsonl

Debian's ``iso-codes`` package ships the ISO lists of countries (3166-1, and former
countries 3166-3), languages (639-2), language families (639-5), currencies (4217)
and scripts (15924) as JSON under /usr/share/iso-codes/json, and their translations,
made by the package's translators, as gettext catalogues under /usr/share/locale. Each
English name with its French translation is one Alpaca example (the identical ones, such
as "Canada", too), tagged with its list as ``task``: about 1,245 examples, 1 in 9 held
out (a fixed shuffle). No network: the files are read where Debian installed them
(``apt-get install iso-codes`` where they are missing). ``--language de`` makes the
German set, and any other catalogue the package ships works alike.
"""

from __future__ import annotations

import argparse
import gettext
import json
import os
import random

JSON_DIR, LOCALE_DIR = "/usr/share/iso-codes/json", "/usr/share/locale"
# (gettext domain, key of the JSON list, what one entry is: the task and the instruction's noun)
LISTS = (("iso_3166-1", "3166-1", "country"), ("iso_3166-3", "3166-3", "former country"),
         ("iso_639-2", "639-2", "language"), ("iso_639-5", "639-5", "language family"),
         ("iso_4217", "4217", "currency"), ("iso_15924", "15924", "script"))
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}


def name_pairs(language: str = "fr") -> list[dict]:
    """One Alpaca record per (English name, translated name) of :data:`LISTS`, in file order."""
    records, seen = [], set()
    for domain, key, what in LISTS:
        path = os.path.join(JSON_DIR, f"{domain}.json")
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: missing (install Debian's iso-codes package)")
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)[key]
        catalogue = gettext.translation(domain, LOCALE_DIR, [language])
        for entry in entries:
            name = entry["name"]
            if (what, name) in seen:
                continue
            seen.add((what, name))
            records.append({"instruction": f"Give the {LANGUAGES.get(language, language)} name "
                            f"of this {what}.", "input": name,
                            "output": catalogue.gettext(name), "task": what.replace(" ", "_")})
    return records


def split(records: list[dict], held_every: int = 9, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a fixed shuffle, then every ``held_every``-th record held out."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = {i for j, i in enumerate(order) if j % held_every == 0}
    return ([records[i] for i in order if i not in held], [records[i] for i in order if i in held])


def write(records: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("data", "iso_fr"), help="folder of train/val.jsonl")
    p.add_argument("--language", default="fr", help="a locale iso-codes translates into (default: fr)")
    args = p.parse_args()
    train, held = split(name_pairs(args.language))
    os.makedirs(args.out, exist_ok=True)
    write(train, os.path.join(args.out, "train.jsonl"))
    write(held, os.path.join(args.out, "val.jsonl"))
    print(f"{len(train)} training and {len(held)} held-out examples in {args.out}")
