"""Files: atomic writes (``fileio``) and Hugging Face folders as stored (``hf``).

Nothing here knows the model's schema or the trainer's state; those are the
model's (``minillm.model.params``) and the trainer's (``minillm.training.checkpoint``).
"""
