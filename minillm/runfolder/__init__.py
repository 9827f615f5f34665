"""Run folders: what ``minillm train --out DIR`` and ``minillm rl --out DIR`` write, and how it is read.

A run folder is loadable as it stands by ``minillm.from_pretrained(DIR)`` and by
``transformers``; it holds the last checkpoint, and ``best/`` the best one::

    DIR/
      config.json  model.safetensors  generation_config.json      the last model (HF folder)
      tokenizer.json  tokenizer_config.json                       its tokenizer
      optimizer.safetensors                                       AdamW moments ("m.NAME", "v.NAME")
      trainer_state.json                                          step, data position, RNG state,
                                                                  settings, best score
      metrics.jsonl  loss.svg  tasks.svg                          the run's log and its pictures
      best/  config.json model.safetensors ... best_step.json     the best model, and its step
                                                                  (stored in --save-dtype when the
                                                                  run's call returns: store_best)
      reference/                                                  REINFORCE: the frozen reference
      .lock                                                       one process at a time

A run folder is data: every file is read by one function that checks it and
names the file and the field in its error; nothing read from a folder is
imported, called, or used as a path outside it (but the run's data files, read
again only when their sha256 is the one saved). Each checkpoint is committed as
one unit (the journal), so a kill at any moment leaves a loadable folder, and
after recovery a consistent one. One process per folder (the lock). No pickle:
tensors go through safetensors, everything else is JSON.

    checkpoint.py      the checkpoint's files: their names, the writers, recovery, the reader
    journal.py         the journal that commits a set of files as one unit, and its recovery
    state_file.py      trainer_state.json: its schema, one reader that checks every field
    fields.py          the checks of one JSON field each (StateError, one line naming the field)
    optimizer_file.py  optimizer.safetensors: the AdamW moments, checked against the model
    metrics.py         metrics.jsonl: the run's log, one JSON record a line
    settings.py        the settings and the Generator as trainer_state.json keeps them
    lock.py            one process per folder: an advisory lock on DIR/.lock
    rules.py           what a folder may hold for a new run, --resume and --overwrite, clearing it

The pictures (loss.svg, tasks.svg) are drawn by :mod:`minillm.plots`; the
trainers (:mod:`minillm.training`) and the workflows use this package, which
knows neither.
"""
