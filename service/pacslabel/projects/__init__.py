"""Annotation projects: declarative project files, the labeling protocol, item selection and splits."""
