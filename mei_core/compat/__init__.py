"""Importers of other MEI tools' configurations and call shapes.

``sinzlab``: :func:`~mei_core.compat.sinzlab.translate` turns a sinzlab/mei method config into ours;
``connectome_interpreter``: :func:`~mei_core.compat.connectome_interpreter.activation_maximisation`
runs connectome_interpreter's call on the batched engine and returns its tuple.
"""
