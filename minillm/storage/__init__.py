"""Files: atomic writes (``fileio``), Hugging Face folders as stored (``hf``), a folder's lock (``lock``).

Nothing here knows the model's schema or the trainer's state; those are the
model's (``minillm.model.params``) and the trainer's (``minillm.training.checkpoint``).
"""
