"""TensorBoard is the logger a run gets: loss curve, validation metrics, example table and diagnostics image."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_a_run_writes_loss_metrics_examples_and_the_diagnostics_image(trained_run):
    (events,) = trained_run.glob("lightning_logs/version_0/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()
    tags = accumulator.Tags()
    assert {"train/loss", "val/loss", "val/sacrebleu", "diag/acc_t0.50"} <= set(tags["scalars"])
    assert [event.step for event in accumulator.Scalars("train/loss")] == [0, 1]
    (image,) = accumulator.Images("diag/curves")
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.step == 2
    (table,) = accumulator.Tensors("val/examples/text_summary")
    text = table.tensor_proto.string_val[0].decode()
    assert text.startswith("| source | reference | prediction |") and "the cat sat on the mat" in text


def test_the_default_logger_is_tensorboard_and_another_can_be_chosen(tmp_path):
    """Lightning picks TensorBoard when the package is installed (a dependency); ``--trainer.logger`` overrides it."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    assert isinstance(L.Trainer(accelerator="cpu", default_root_dir=tmp_path).logger, TensorBoardLogger)
    assert isinstance(L.Trainer(accelerator="cpu", logger=CSVLogger(tmp_path)).logger, CSVLogger)
