"""Scale-out: one coordinator, parallel runs on local workers or a Ray cluster (docs/scale.md)."""
