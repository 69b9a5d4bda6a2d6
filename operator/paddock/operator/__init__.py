"""paddock.operator"""
