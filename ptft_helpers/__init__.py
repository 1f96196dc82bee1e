"""ptft_helpers: the code behind the ptft notebook series on pre-training and fine-tuning.

One module per concern, from the ground floor up:

- ``settings`` (environment switches: fast mode, progress bars, data and checkpoint folders),
  ``validation`` (the one "whole number" check), ``seeding`` (seeding without touching the caller's RNG);
- ``data`` (Fashion-MNIST and MNIST, checked and repaired), ``devices`` (CUDA, MPS or CPU);
- ``models`` (the autoencoders and the classifier), ``pca`` (PCA and the linear autoencoder);
- ``engine`` (the one training loop, ``fit``, that every model trains through; ``adam``),
  ``training`` (pretrain, finetune, evaluate), ``contrastive`` (notebook 06's SimCLR: augmentations, NT-Xent,
  the small conv encoder), ``checkpoints`` (the checkpoint file format, for both kinds);
- ``protocol`` (the label-efficiency experiment's budget), ``pretrained`` (load or train the shared encoders: the one
  writer of checkpoints), ``explorers`` (the latent-size and learning-rate experiments), ``stats`` (paired
  differences, t-based confidence intervals, Holm),
  ``sweep`` (many small classifiers trained at once with ``torch.func``), ``experiments`` (notebook 05's
  label-efficiency protocol), ``results`` (every run's row, saved to and read from the results folder);
- ``vit`` (a vision transformer and its masked autoencoder, by hand, and the same weights in Hugging Face's
  classes), ``mae`` (pretraining it), ``mae_trials`` (notebook 08's label-efficiency trials);
- ``lora`` (LoRA by hand, and through ``peft``: adapters saved alone, several on one base), ``lora_trials``
  (notebook 09's comparisons);
- ``probes`` (linear probe, and label spreading over a k-nearest-neighbour graph, on fixed features), ``distributed``
  (data-parallel pretraining under ``torchrun``, notebook 10);
- ``plots`` (figures), ``widgets`` (the explorers' sliders), ``envcheck`` (the set-up check) and ``cli``
  (``python -m ptft_helpers``);
- ``sandbox`` (grading: ``nbgrader autograde`` runs each hand-in's kernel in a bubblewrap sandbox), ``exchange``
  (the class server's ``nbgrader collect``: only hand-ins that their student made, dated by the file system).
"""

__version__ = "0.1.0"
