"""A pack that fails to import, as one with a missing dependency does."""
import embedded_test_missing_dependency  # noqa: F401  (does not exist)


class EmbeddedTestBrokenNode:
    pass


NODE_CLASS_MAPPINGS = {"EmbeddedTestBrokenNode": EmbeddedTestBrokenNode}
