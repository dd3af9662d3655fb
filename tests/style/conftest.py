"""Fixtures of the style tests: real images from the shared set and the seeded random backbone."""

from __future__ import annotations

import pytest
from PIL import Image

from facestyle.models import registry


@pytest.fixture(scope="session")
def extractor():
    """vgg19-random with its default taps (style relu1_1..relu5_1, content relu4_2), built once:
    building it is most of a tiny run."""
    return registry.backbone("vgg19-random", None, "cpu")


@pytest.fixture(scope="session")
def images(tmp_path_factory, shared_data):
    """A real content photo and style painting from the shared set, plus a grey and a RGBA variant."""
    root = shared_data / "style"
    content = root / "content" / "tubingen.jpg"
    style = root / "styles" / "starry-night.jpg"
    assert content.is_file() and style.is_file(), "shared style data missing"
    tmp = tmp_path_factory.mktemp("imgs")
    grey = tmp / "grey.png"
    Image.open(content).convert("L").resize((90, 60)).save(grey)
    rgba = tmp / "rgba.png"
    Image.open(style).convert("RGBA").resize((50, 70)).save(rgba)
    return {"content": content, "style": style, "grey": grey, "rgba": rgba}


@pytest.fixture(scope="session")
def cli():
    """A Typer app holding only ``stylize`` (registered as the real app does), for CliRunner."""
    import typer

    from facestyle.cli.style import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so the command is invoked by name as in the real app
        pass

    register(app)
    return app
