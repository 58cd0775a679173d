"""Built-in posegen recipes (YAML files), installed as the package ``posegen.recipes``."""
