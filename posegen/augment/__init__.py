"""posegen.augment"""
