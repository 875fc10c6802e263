"""models: base encoders, datasets, fine-tuning and evaluation of the classifiers the stream runs."""
