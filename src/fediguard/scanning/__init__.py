"""From an upload's bytes to detector results: the job queue, the pipeline and the scanners."""
