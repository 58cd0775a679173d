"""posegen.pose"""
