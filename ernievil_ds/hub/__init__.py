"""Publishing models on the Hugging Face Hub: the files that are safe to share (``files``), what the run
that trained them recorded (``runs``), the model card (``card``) and the commit (``push``)."""
