"""Model sources: every form a model comes in, detected from its content, read the same way.

======================  =====================================================  =====================
source                  what                                                   detected by
======================  =====================================================  =====================
``torch``               segpipe checkpoints, state dicts (``torch.save``)      zip with ``data.pkl``
``safetensors``         state dicts and segpipe checkpoints                    its JSON header
``torchscript``         ``torch.jit.save``                                     zip with ``code/``
``torch_export``        ``torch.export.save`` (``.pt2``)                       zip with ``models/*.json``
``onnx``                ONNX, run by onnxruntime                               protobuf ModelProto
``huggingface``         transformers folders (SegFormer, Mask2Former ...)      ``config.json`` model_type
``smp``                 segmentation_models_pytorch folders                    ``config.json`` _model_class
======================  =====================================================  =====================

:func:`detect_source` picks the source; :class:`~segpipe.models.ref.ModelRef` reads the meta through it
on the driver and loads the model through it on each worker. A path no source reads is refused in
one line saying what it is (Keras, TensorFlow, TFLite, a pickled model object ...) and which forms
segpipe reads. ``--classes`` (:mod:`.classes`) names the classes of any of them.
"""

from segpipe.models.sources.base import (
    SOURCES,
    LoadedModel,
    ModelSource,
    Probe,
    SourceOptions,
    detect_source,
    get_source,
    register_source,
    source_names,
)

__all__ = [
    "SOURCES",
    "LoadedModel",
    "ModelSource",
    "Probe",
    "SourceOptions",
    "detect_source",
    "get_source",
    "register_source",
    "source_names",
]
