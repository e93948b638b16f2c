"""Running grids: cells from a grid, one lock per cell, one record per cell (``grid``, ``locks``,
``records``)."""
