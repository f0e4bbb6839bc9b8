"""The chain language: the JSON spec, prompt templates, plugins and the validation passes."""
