"""The posegen command line (installed as ``posegen.cli``; entry point ``posegen``)."""
