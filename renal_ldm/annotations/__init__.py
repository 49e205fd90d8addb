"""Annotations painted on whole slides: per-region binary masks of one class, the strokes that change them,
masks <-> polygons (shapely, scikit-image contours), QuPath GeoJSON, agreement between annotators (Dice, IoU)
and patch-mask data sets cut from annotated regions. Pure library code: storage (files and database rows) is
app/annotate.py's and db/repository/annotations.py's."""
