"""paddock.cli"""
