"""Whole-slide images the product writes: `pyramid` (a streamed pyramidal tiled TIFF that OpenSlide and QuPath
read) and `stitch` (a folder of generated patches laid out on a grid as one synthetic slide)."""
