"""LLMFlows' soundtrack flow, code-first: one chainlet per step, fan-out with asyncio.gather.

movie title → (song title ∥ main characters) → lyrics → five critics in parallel. The same
flow as a JSON chain is chains/specs/soundtrack.json. Steps call the offline mock generator;
depend on `OpenAIGenerator` instead for real completions.
"""

import asyncio

import truss_chains as chains
from pydantic import BaseModel

from chainlets import deploy
from chainlets.engine.models import GenerationRequest
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.generators.mock import MockGenerator
from chainlets.language.plugins import ModelParams
from chainlets.language.spec import ChatMessage

CRITIC_SYSTEM_PROMPT = "You are a music critic who writes short reviews of song lyrics"


async def _ask(llm: GeneratorProtocol, step: str, prompt: str, max_words: int,
               system: str | None = None) -> str:
    messages = [ChatMessage(role="system", content=system)] if system else []
    messages.append(ChatMessage(role="user", content=prompt))
    request = GenerationRequest(step=step, plugin="gpt-3", messages=messages,
                                params=ModelParams(max_words=max_words))
    return (await llm.run_remote(request)).text


_CONFIG = chains.RemoteConfig(docker_image=deploy.image(), compute=deploy.cpu_service())


class _AsksLLM:
    """What every step chainlet shares: its resources and the generator it asks.

    A mixin, not a chainlet: truss requires every chainlet class to have its own `run_remote`.
    """

    remote_config = _CONFIG

    def __init__(self, llm: GeneratorProtocol = chains.depends(MockGenerator)) -> None:
        self._llm = llm


class MovieTitle(_AsksLLM, chains.ChainletBase):
    """Step 1: a movie title for the topic."""

    async def run_remote(self, topic: str) -> str:
        return await _ask(self._llm, "movie-title",
                          f"What is a good title of a movie about {topic}?", 12)


class SongTitle(_AsksLLM, chains.ChainletBase):
    """Step 2a: a soundtrack song title."""

    async def run_remote(self, movie_title: str) -> str:
        return await _ask(self._llm, "song-title", "What is a good song title of a soundtrack "
                          f"for a movie called {movie_title}?", 12)


class MainCharacters(_AsksLLM, chains.ChainletBase):
    """Step 2b: two main characters (runs beside SongTitle)."""

    async def run_remote(self, movie_title: str) -> str:
        return await _ask(self._llm, "main-characters",
                          f"What are two main characters for a movie called {movie_title}?", 30)


class Lyrics(_AsksLLM, chains.ChainletBase):
    """Step 3: lyrics from the song title and the characters."""

    async def run_remote(self, song_title: str, main_characters: str) -> str:
        return await _ask(self._llm, "song-lyrics", f"Write lyrics of a movie song called "
                          f"{song_title}. The main characters are {main_characters}", 120)


class Critic(_AsksLLM, chains.ChainletBase):
    """Step 4: one critic's review (five run in parallel)."""

    async def run_remote(self, song_lyrics: str, critic: int) -> str:
        return await _ask(self._llm, f"song-review-{critic}", "Hey, what is your opinion on "
                          f"the following song: {song_lyrics}", 60, system=CRITIC_SYSTEM_PROMPT)


class Soundtrack(BaseModel):
    """Everything the flow produced."""

    topic: str
    movie_title: str
    song_title: str
    main_characters: str
    song_lyrics: str
    reviews: list[str]


@chains.mark_entrypoint("soundtrack")
class SoundtrackFlow(chains.ChainletBase):
    """Entrypoint: runs each step as soon as its inputs exist."""

    remote_config = _CONFIG

    def __init__(self, title: MovieTitle = chains.depends(MovieTitle),
                 song: SongTitle = chains.depends(SongTitle),
                 characters: MainCharacters = chains.depends(MainCharacters),
                 lyrics: Lyrics = chains.depends(Lyrics),
                 critic: Critic = chains.depends(Critic)) -> None:
        self._title, self._song, self._characters = title, song, characters
        self._lyrics, self._critic = lyrics, critic

    async def run_remote(self, topic: str) -> Soundtrack:
        movie_title = await self._title.run_remote(topic)
        song_title, main_characters = await asyncio.gather(
            self._song.run_remote(movie_title), self._characters.run_remote(movie_title))
        song_lyrics = await self._lyrics.run_remote(song_title, main_characters)
        reviews = await asyncio.gather(
            *(self._critic.run_remote(song_lyrics, i) for i in range(5)))
        return Soundtrack(topic=topic, movie_title=movie_title, song_title=song_title,
                          main_characters=main_characters, song_lyrics=song_lyrics,
                          reviews=list(reviews))


if __name__ == "__main__":
    async def _main() -> None:
        with chains.run_local():
            flow = SoundtrackFlow()
            print((await flow.run_remote("friendship")).model_dump_json(indent=2))

    asyncio.run(_main())
