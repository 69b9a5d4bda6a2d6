"""paddock.gateway"""
