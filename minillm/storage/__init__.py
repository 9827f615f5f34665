"""Files: atomic writes (``fileio``), Hugging Face folders as stored (``hf``), safetensors files
(``safetensors_file``) and their bfloat16 (``bfloat16``).

Nothing here knows the model's schema or the trainer's state; those are the
model's (``minillm.model.params``) and the run folder's (``minillm.runfolder``).
"""
