"""posegen.filter"""
