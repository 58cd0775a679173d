"""posegen.repose"""
