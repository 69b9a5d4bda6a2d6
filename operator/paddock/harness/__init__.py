"""paddock.harness"""
