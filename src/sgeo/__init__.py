"""sgeo: SpatialGeo (LLaVA-1.5 + a frozen MoGe geometry encoder) as a feature-caching pipeline."""

__version__ = "0.1.0"
