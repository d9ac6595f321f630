"""One loss per file: tensors in, scalar out, shapes in the docstring."""
