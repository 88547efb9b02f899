"""The pure core: numpy (and pycocotools.mask) only. RLE, polygons, boxes, label maps, tiles, metric accumulators."""
