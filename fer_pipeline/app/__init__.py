"""The app layer: the ``fer-pipeline`` command line, the commands that chain stages (demo,
predict, inspect, report) and the demo-data generator. The only code that imports several
stages, and only through their doors (``stage0_preprocess``, ``stage1_image_encoder``,
``stage2_temporal``)."""
