"""Fine-tuning on downstream tasks: config (``finetuning``, ``tasks.<name>``), data, classifier model,
losses, metrics, the training loop and reports. Import the submodules directly; this package import
stays light (``pipeline.params`` imports the config without pulling in torch)."""
