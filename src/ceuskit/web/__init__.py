"""The ceuskit web app: studies, ROI editor, analysis jobs and results in a browser.

`ceuskit.web.app.create_app` builds the FastAPI application; ``ceuskit serve``
runs it with uvicorn.  The pages use the same HTTP API a script can call.
"""
