"""A pack with a prestartup script: its node reports what the script set before this import."""
import os

SEEN_AT_IMPORT = os.environ.get("EMBEDDED_TEST_PRESTARTUP", "prestartup script did not run")


class EmbeddedTestPrestartupSeen:
    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return {"ui": {"text": [SEEN_AT_IMPORT]}}


NODE_CLASS_MAPPINGS = {"EmbeddedTestPrestartupSeen": EmbeddedTestPrestartupSeen}
