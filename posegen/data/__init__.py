"""posegen.data"""
