"""Training: supervised pretraining on the simulator (:mod:`.pretrain`) and EndoDAV's self-supervised SSB
fine-tuning (:mod:`.trainer`, configured by :mod:`.config`), with the clip order and augmentation
(:mod:`.clips`) and the distributed set-up under torchrun (:mod:`.distributed`). The commands are
``endo-depth pretrain`` and ``endo-depth train`` (:mod:`endo_depth_model.cli`).
"""
