"""`reelstream review`: the reviewers' page (templates and static files beside this module)."""
