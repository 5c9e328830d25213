"""The BERT classifier: its config, backbone, preprocessor and dropout."""
