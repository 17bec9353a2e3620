"""Constants shared by the batch tests (the inputs written by ``conftest.batch_inputs``)."""
VOCAB = ("nucleus", "cell", "vesicle")
SHORT_SIDE, MAX_SIDE = 64, 128
MOVIE_SHAPE = (7, 64, 80)
IMAGE_SHAPES = {"a": (96, 128), "b": (96, 128), "c": (80, 100)}
