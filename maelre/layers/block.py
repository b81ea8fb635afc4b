"""The pre-norm transformer block shared by every backbone."""
from __future__ import annotations

from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from maelre.layers.attention import Attention, exact_attention


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    The two residual steps are exposed separately (``attn_residual``/``mlp_residual``) so
    a backbone can act between them (MAELRE merges tokens there).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, proj_drop=dropout)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=dropout)
        if dropout == 0:  # timm's Mlp keeps nn.Dropout(0) modules: a module call and a dropout op each, for nothing
            self.mlp.drop1 = nn.Identity()
            self.mlp.drop2 = nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attn_residual(self, x: Tensor, context: Tensor | None = None, kernel=exact_attention, **kernel_kwargs) -> Tensor:
        """``x + attn(norm1(x))``; ``context`` (already normed by the caller if wanted) feeds keys/values."""
        return x + self.drop_path1(self.attn(self.norm1(x), context, kernel, **kernel_kwargs))

    def mlp_residual(self, x: Tensor) -> Tensor:
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, kernel=exact_attention, **kernel_kwargs) -> Tensor:
        return self.mlp_residual(self.attn_residual(x, None, kernel, **kernel_kwargs))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over ``depth`` blocks."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]
