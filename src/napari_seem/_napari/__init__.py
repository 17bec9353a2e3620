"""The napari side of napari-seem: dock widget, layer <-> prompt conversion, thread workers.

Nothing here does model work: layers become :class:`~napari_seem.engine.prompts.ObjectPrompt`
objects, a thread worker calls the engine, and results are written back into Labels layers.
"""
