"""LTX Video (Lightricks): its asynchronous v2 API, model catalogue and simulator."""
